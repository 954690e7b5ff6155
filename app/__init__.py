"""spreadwatch application: runtime wiring, web server, command line, simulated venues."""
