"""outreach: campaign launch and stakeholder outreach automation."""

__version__ = "0.1.0"
