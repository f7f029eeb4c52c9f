"""One-shot command line verbs (`fleet <verb>`)."""
