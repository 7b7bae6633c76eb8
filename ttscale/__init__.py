"""ttscale's command line and workdir; the work itself lives in flows/, tasks/, models/, warehouse/."""
