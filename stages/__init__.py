"""One module per DVC stage: load params, open inputs, call the library, write the artifact."""
