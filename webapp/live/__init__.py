"""The live feed: one Redis pub/sub hub per web process (fanout.py), fanned out to every
open /stream (SSE) and /ws (WebSocket) of that process (views.py). feed.py decides what each
stream says; sse.py and ws.py only format it."""
