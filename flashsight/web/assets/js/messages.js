// One message on screen: images, thinking (collapsed), the answer, grounding boxes, actions.

import { button, el } from './dom.js';
import { renderMarkdown } from './markdown.js';

export function userMessageView(message) {
  const article = el('article', 'message user');
  article.setAttribute('aria-label', 'Your message');
  if (message.images.length) {
    const images = el('div', 'images');
    message.images.forEach((url, index) => {
      const image = el('img');
      image.src = url;
      image.alt = `Attached image ${index + 1}`;
      images.append(image);
    });
    article.append(images);
  }
  if (message.content) article.append(el('div', 'text', message.content));
  return article;
}

// `imageUrl`: the conversation's last image before this answer, which its boxes refer to.
export class AssistantView {
  constructor(imageUrl, actions) {
    this.imageUrl = imageUrl;
    this.element = el('article', 'message assistant');
    this.element.setAttribute('aria-label', 'Answer');
    this.thinking = el('details', 'thinking');
    this.thinking.append(el('summary', '', 'Thinking'));
    this.thinkingBody = el('div', 'thinking-body markdown');
    this.thinking.append(this.thinkingBody);
    this.thinking.hidden = true;
    this.content = el('div', 'content markdown');
    this.figure = el('figure', 'boxed-image');
    this.figure.hidden = true;
    this.notice = el('p', 'notice');
    this.notice.hidden = true;
    this.actions = el('div', 'actions');
    this.element.append(this.thinking, this.content, this.figure, this.notice, this.actions);
    this.actionHandlers = actions;
    this.pending = null;
  }

  // Re-rendered at most once a frame while the stream grows.
  update(answer) {
    this.pending = answer;
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      this.render(this.pending);
    });
  }

  render(answer) {
    this.thinking.hidden = !answer.reasoning;
    if (answer.reasoning) renderMarkdown(this.thinkingBody, answer.reasoning);
    renderMarkdown(this.content, answer.content);
    this.drawBoxes(answer.boxes);
  }

  finish(answer, { notice, canRegenerate }) {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = null;
    this.render(answer);
    this.notice.hidden = !notice;
    this.notice.textContent = notice || '';
    this.showActions(answer, canRegenerate);
  }

  showActions(answer, canRegenerate) {
    const copy = button('Copy', '', async () => {
      await navigator.clipboard.writeText(answer.content);
      copy.textContent = 'Copied';
      setTimeout(() => { copy.textContent = 'Copy'; }, 1500);
    }, 'Copy the answer');
    this.actions.replaceChildren(copy);
    if (canRegenerate) {
      this.actions.append(button('Regenerate', 'regenerate', this.actionHandlers.regenerate, 'Regenerate the answer'));
    }
  }

  drawBoxes(boxes) {
    this.figure.hidden = !(boxes && boxes.length && this.imageUrl);
    if (this.figure.hidden) return;
    const image = el('img');
    image.src = this.imageUrl;
    image.alt = `Image with ${boxes.length} marked region${boxes.length === 1 ? '' : 's'}`;
    this.figure.replaceChildren(image, ...boxes.map(boxFrame));
  }
}

// Corners are 0-1000 of the image, so percentages keep them in place at any displayed size.
function boxFrame(box) {
  const [x1, y1, x2, y2] = box.box_1000.map((value) => Math.min(1000, Math.max(0, value)) / 10);
  const frame = el('div', 'box');
  frame.style.left = `${x1}%`;
  frame.style.top = `${y1}%`;
  frame.style.width = `${Math.max(0, x2 - x1)}%`;
  frame.style.height = `${Math.max(0, y2 - y1)}%`;
  if (box.label) frame.append(el('span', 'box-label', box.label));
  return frame;
}
