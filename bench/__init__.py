"""Side-by-side benchmarks: paylive next to a python-socketio peer (run ``python -m bench``)."""
