"""One email as one contact gets it: the variant for their language, rendered with the
values every template sees. The web's "view in browser" page renders through here,
with the step's own templates (its campaign's snapshot) and the same links."""

from __future__ import annotations

from outreach.domain.campaign import CampaignInfo
from outreach.domain.contact import Contact
from outreach.domain.errors import TemplateError
from outreach.domain.render import EmailTemplate, RenderedEmail
from outreach.ports import StepInfo
from outreach.templating import TemplateLibrary, render_values, variant_language


def render_email(library: TemplateLibrary, step: StepInfo, campaign: CampaignInfo,
                 contact: Contact, urls: dict[str, str]) -> RenderedEmail:  # fmt: skip
    """The step's email for ``contact``: its template's variant for their language,
    with the campaign, the contact, the step and ``urls`` (unsubscribe, view online)."""
    _kind, variants = library.variants(step.template, "email")
    file = library.pick(variants, contact.language)
    template = library.compile(file)
    if not isinstance(template, EmailTemplate):
        raise TemplateError(f"{step.template} is not an email template", file=file.label)
    values = render_values(campaign, contact=contact, urls=urls, lang=variant_language(file, campaign),
                           step={"id": step.key, "channel": "email", "template": step.template})  # fmt: skip
    return template.render(values)
