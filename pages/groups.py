"""Groups page (being built)."""

import streamlit as st

st.title("Groups")
st.info("This page is being built.")
