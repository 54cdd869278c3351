"""SCIM 2.0 provisioning server: HTTP, SCIM protocol and management API."""
