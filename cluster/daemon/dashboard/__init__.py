"""The daemon's dashboard: a web page of the cluster, its jobs, results and requests.

``routes.mount`` adds the page (``static/``: HTML, a script and a style sheet that ship in
the package; no CDN, no build step) and its read-only JSON routes to the daemon's app;
``snapshot`` keeps the cluster's view fresh in the background; ``results`` renders a run
as ``clusterctl report`` does. docs/dashboard.md describes the page.
"""
