# The taskstream app image for docker-compose.yml (the devstack path needs no Docker).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
EXPOSE 8501
# Keep the server's memory level under live refresh (pipeline/serve.py says why).
ENV MALLOC_ARENA_MAX=2 ARROW_DEFAULT_MEMORY_POOL=system
CMD ["streamlit", "run", "app.py", "--server.address", "0.0.0.0", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
