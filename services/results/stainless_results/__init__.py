"""The results service: API, FHIR reports and the review page."""
