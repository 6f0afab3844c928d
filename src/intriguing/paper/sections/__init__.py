"""One module per section of the reproduction report: settings per preset, run, render and claims."""
