"""taskstream's Streamlit app: the frame (page config, shared sidebar) and the page router."""

import streamlit as st

from ui.resources import memory_trimmer
from ui.sidebar import render_sidebar

st.set_page_config(page_title="taskstream", page_icon=":material/stream:", layout="wide")
memory_trimmer()  # once per process: keeps the server's memory level under live refresh

navigation = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
        st.Page("pages/tasks.py", title="Tasks", icon=":material/checklist:"),
        st.Page("pages/search.py", title="Search", icon=":material/search:"),
        st.Page("pages/topic.py", title="Topic", icon=":material/view_stream:"),
        st.Page("pages/partitions.py", title="Partitions", icon=":material/view_week:"),
        st.Page("pages/groups.py", title="Consumer groups", icon=":material/groups:"),
        st.Page("pages/replays.py", title="Replays", icon=":material/replay:"),
        st.Page("pages/lab.py", title="Lab", icon=":material/science:"),
    ]
)
render_sidebar()
navigation.run()
