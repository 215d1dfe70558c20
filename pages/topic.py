"""Topic page (being built)."""

import streamlit as st

st.title("Topic")
st.info("This page is being built.")
