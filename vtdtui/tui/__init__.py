"""The Textual front end: panes that render the views, prompts, help and palette."""
