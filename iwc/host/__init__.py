"""HOST SIDE: the command line, orchestration, kernel generator, synthetic data and backends.

Nothing here is embedded in a kernel or enters a stage's code hash (`iwc.provenance.source_files`
leaves this folder out), so editing host code never invalidates a trained stage.
"""
