"""Example stages: the video pipeline (``stages.video``) and the order pipeline (``stages.orders``)."""
