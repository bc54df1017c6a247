"""Views of a report. Each renderer is a pure function of a ``Report``: none recomputes a score."""
