"""The synthetic support-desk world: scenarios, demonstrations, held-out prompts.

See docs/world.md for the file formats and the preference-function contract.
"""
