"""Serving trained models over HTTP: ``python -m nlp_lstm mode=serve ckpt=PATH``.

settings.py (the ``serve`` section), batcher.py (dynamic batching, one inference thread a
model), app.py (the FastAPI endpoints and their errors), server.py (the mode: load, run
uvicorn, stop gracefully), static/index.html (the demo page).
"""
