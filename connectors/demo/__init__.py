"""The demo departments of `make run`: a feed of events (feed.py) and a web shop (shop.py)."""
