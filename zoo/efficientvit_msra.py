"""Placeholder: this family module is being written (see the open issues)."""
