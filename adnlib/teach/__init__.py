"""Teaching helpers: figures, analyses, toy flows, paper numbers, the headless notebook runner. Never imported by
the core."""
