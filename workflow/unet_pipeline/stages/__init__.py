"""One module per pipeline stage, named as its rule file, script and env: what each rule script calls."""
