"""The trained models behind an address: a JSON API with dynamic batching and a web page (`recipes/serve.py`)."""
