"""The papers' methods as resumable pipelines built from the other packages."""
