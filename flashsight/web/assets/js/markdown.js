// Model output as HTML: marked renders, DOMPurify sanitizes, and only then is it inserted.

import { marked } from '../vendor/marked.esm.js';
import DOMPurify from '../vendor/purify.es.js';

marked.use({ gfm: true, async: false });

const SANITIZE = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'dialog'],
  FORBID_ATTR: ['style'],
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook('afterSanitizeAttributes', (node) => {
  if (node.tagName === 'A') {
    node.setAttribute('target', '_blank');
    node.setAttribute('rel', 'noopener noreferrer');
  }
});

export function renderMarkdown(element, text) {
  element.replaceChildren(DOMPurify.sanitize(marked.parse(text || ''), SANITIZE));
}
