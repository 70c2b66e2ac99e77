"""Tests against a real ComfyUI server (see conftest.py)."""
