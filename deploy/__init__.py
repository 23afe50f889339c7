"""Stack manager: installs, starts, health-checks and stops every server of the platform locally."""
