"""Pipeline steps that combine the imaging code with the database, store and events."""
