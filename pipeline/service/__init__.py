"""The use cases: `TaskService` over the repository, publisher and search protocols it declares."""
