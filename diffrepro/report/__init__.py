"""The report: tables, figures and the claims table, generated from the tidy metrics table."""
