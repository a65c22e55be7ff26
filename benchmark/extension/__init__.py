"""How methods enter the suite: name -> method registries (`registry`),
plugins by reference or entry point (`plugins`), typed method parameters
validated in one line (`schema`), and the contracts every defense and
re-activation method is checked against (`contract`)."""
