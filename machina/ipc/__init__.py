"""Local IPC shared by the socket services: socket activation, peer credentials, JSON-lines RPC."""
