// Building elements without HTML strings: text goes in as text, never as markup.

export function el(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

export function button(label, className, onClick, ariaLabel) {
  const element = el('button', className, label);
  element.type = 'button';
  if (ariaLabel) element.setAttribute('aria-label', ariaLabel);
  element.addEventListener('click', onClick);
  return element;
}
