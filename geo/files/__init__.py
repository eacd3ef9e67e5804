"""Files around every output: text encodings users write, file modes, provenance markers
(which files idou may replace), one writer per output, work folders, and no network
sources unless asked."""
