"""Example stages: the video pipeline (``stages.video``) and the orders (``stages.orders``)."""
