"""The Kaggle sandbox: a loopback stand-in for Kaggle that the real `kaggle` client talks to (tests, rehearsals).

`server.py` the `Sandbox` (competition, datasets, submissions, kernels API); `http.py` the HTTP side;
`kernels.py` pushed kernels run for real; `faults.py` injectable faults; `cli.py` `python -m iwc.host.sandbox`.
Nothing is imported here, so that reading the command line (`invoke --list`) stays light.
"""
