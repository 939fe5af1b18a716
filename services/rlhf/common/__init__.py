"""The only code the services share."""
