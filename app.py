"""taskstream's Streamlit app: the frame (page config, shared sidebar) and the page router."""

import streamlit as st

from ui.sidebar import render_sidebar

st.set_page_config(page_title="taskstream", page_icon=":material/stream:", layout="wide")

navigation = st.navigation([st.Page("pages/overview.py", title="Overview", icon=":material/home:")])
render_sidebar()
navigation.run()
