"""What operators touch, the top layer: the `rallypoint` command (a package split by area) and
the Textual console (the app routes between screens and runs the LAN worker; each screen,
dialog and widget in its own module; the messages workers post back declared once; times and
sizes formatted for people in one place).

They orchestrate only: the work happens in `appliance` and `sync`. Screens are handed the
node's services they use and follow the change feed; the console names no document id and no
stick file name. Its errors (the command line's usage error among them) are in tui/errors.py,
under `RallypointError`."""
