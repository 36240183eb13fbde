"""Channels: how a message leaves outreach (SMTP, the local Maildir target, X, press)."""
