"""Method specifications registered with nerfstudio (installed as ``shacira_nerf.method_configs``)."""
