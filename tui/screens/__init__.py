"""The console's screens, one a module: setup, unlock, main (with its message actions), peers,
search, help, admin, courier. Each is handed the node's services it uses; none reaches up
into the app, and other screens are asked for with a Navigate message (tui/messages.py)."""
