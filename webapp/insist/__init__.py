"""Alerts that insist: repeats and escalation until acknowledged (service), the signed
acknowledgement link (links), the web's buttons and the link's page (views), the API (api)."""
