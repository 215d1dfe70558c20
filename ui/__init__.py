"""Streamlit glue shared by app.py and pages/: cached resources and the sidebar. Pages import this and
`pipeline`, never the service clients directly."""
