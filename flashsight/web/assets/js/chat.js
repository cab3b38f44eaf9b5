// The open conversation: its messages on screen and on the server, and generating answers.

import { conversations } from './api.js';
import { readAsDataUrl } from './attachments.js';
import { AssistantView, userMessageView } from './messages.js';
import { streamChat } from './stream.js';

export const DEFAULT_SETTINGS = { system_prompt: '', temperature: null, max_tokens: null, thinking: true };

export class Chat {
  constructor({ messagesElement, emptyNote, status, onBusy, onCreated }) {
    Object.assign(this, { messagesElement, emptyNote, status, onBusy, onCreated });
    this.reset();
  }

  reset() {
    this.conversation = null;
    this.settings = { ...DEFAULT_SETTINGS };
    this.messages = [];
    this.controller = null;
    this.renderAll();
  }

  async open(id) {
    const detail = await conversations.get(id);
    this.conversation = detail;
    this.settings = { ...DEFAULT_SETTINGS, ...detail.settings };
    this.messages = detail.messages;
    this.renderAll();
  }

  async saveSettings(settings) {
    this.settings = settings;
    if (this.conversation) this.conversation = await conversations.update(this.conversation.id, { settings });
  }

  async send(text, images) {
    if (!this.conversation) {
      this.conversation = await conversations.create({ title: titleFrom(text, images), settings: this.settings });
      this.onCreated(this.conversation);
    }
    const stored = await conversations.addMessage(this.conversation.id, {
      role: 'user', content: text, images: images.map((image) => image.dataUrl),
    });
    stored.dataUrls = images.map((image) => image.dataUrl);
    this.messages.push(stored);
    this.append(stored);
    await this.generate();
  }

  stop() {
    this.controller?.abort();
  }

  async regenerate() {
    const last = this.messages.at(-1);
    if (this.controller || last?.role !== 'assistant') return;
    await conversations.removeMessage(this.conversation.id, last.id);
    this.messages.pop();
    this.renderAll();
    await this.generate();
  }

  async generate() {
    for (const old of this.messagesElement.querySelectorAll('.regenerate')) old.remove();
    const view = new AssistantView(this.lastImageUrl(this.messages.length), { regenerate: () => this.regenerate() });
    this.messagesElement.append(view.element);
    this.emptyNote.hidden = true;
    const answer = { content: '', reasoning: '', boxes: null };
    const timing = { startedAt: performance.now(), firstAt: null, usage: null };
    this.controller = new AbortController();
    this.onBusy(true);
    let notice = null;
    try {
      await streamChat(await this.request(), {
        signal: this.controller.signal,
        onChunk: (chunk) => this.take(chunk, answer, timing, view),
      });
    } catch (error) {
      notice = error.name === 'AbortError' ? 'Stopped.' : `Error: ${error.message}`;
    } finally {
      this.controller = null;
      this.onBusy(false);
    }
    view.finish(answer, { notice, canRegenerate: true });
    this.recordSpeed(timing);
    await this.keep(answer, view);
  }

  take(chunk, answer, timing, view) {
    if (chunk.usage) timing.usage = chunk.usage;
    const delta = chunk.choices?.[0]?.delta;
    if (!delta) return;
    if (delta.content || delta.reasoning_content) timing.firstAt ??= performance.now();
    answer.content += delta.content || '';
    answer.reasoning += delta.reasoning_content || '';
    if (delta.boxes) answer.boxes = delta.boxes;
    view.update(answer);
    this.scrollToEnd();
  }

  recordSpeed({ startedAt, firstAt, usage }) {
    if (firstAt === null) return;
    const decodeSeconds = (performance.now() - firstAt) / 1000;
    const tokens = usage?.completion_tokens;
    const perSecond = tokens > 1 && decodeSeconds > 0 ? (tokens - 1) / decodeSeconds : null;
    this.status.recordAnswer(firstAt - startedAt, perSecond);
  }

  // A stopped answer is kept too, as far as it got.
  async keep(answer, view) {
    if (!answer.content && !answer.reasoning) return;
    const stored = await conversations.addMessage(this.conversation.id, {
      role: 'assistant', content: answer.content, reasoning: answer.reasoning || null, boxes: answer.boxes,
    });
    this.messages.push(stored);
    view.element.dataset.messageId = stored.id;
  }

  async request() {
    const messages = [];
    if (this.settings.system_prompt) messages.push({ role: 'system', content: this.settings.system_prompt });
    for (const message of this.messages) messages.push(await wireMessage(message));
    const body = { messages };
    if (this.status.model) body.model = this.status.model;
    if (this.settings.temperature !== null) body.temperature = this.settings.temperature;
    if (this.settings.max_tokens !== null) body.max_tokens = this.settings.max_tokens;
    if (!this.settings.thinking) body.chat_template_kwargs = { enable_thinking: false };
    return body;
  }

  // The last image among the first `count` messages: the one an answer's boxes refer to.
  lastImageUrl(count) {
    for (const message of this.messages.slice(0, count).reverse()) {
      if (message.images?.length) return message.images.at(-1);
    }
    return null;
  }

  renderAll() {
    this.messagesElement.replaceChildren(this.emptyNote);
    this.emptyNote.hidden = this.messages.length > 0;
    this.messages.forEach((message, index) => {
      if (message.role === 'user') {
        this.append(message);
        return;
      }
      const view = new AssistantView(this.lastImageUrl(index), { regenerate: () => this.regenerate() });
      view.element.dataset.messageId = message.id;
      view.finish(message, { notice: null, canRegenerate: index === this.messages.length - 1 });
      this.messagesElement.append(view.element);
    });
    this.scrollToEnd();
  }

  append(message) {
    const view = userMessageView(message);
    view.dataset.messageId = message.id;
    this.messagesElement.append(view);
    this.emptyNote.hidden = true;
    this.scrollToEnd();
  }

  scrollToEnd() {
    this.messagesElement.scrollTop = this.messagesElement.scrollHeight;
  }
}

function titleFrom(text, images) {
  const line = text.split('\n')[0].trim();
  if (line) return line.length > 60 ? `${line.slice(0, 57)}...` : line;
  return images.length ? `Image: ${images[0].name}`.slice(0, 60) : 'New chat';
}

// A stored message as /v1/chat/completions takes it; stored images are read back as data URLs.
async function wireMessage(message) {
  if (message.role === 'assistant') return { role: 'assistant', content: message.content };
  if (!message.images.length) return { role: 'user', content: message.content };
  message.dataUrls ??= await Promise.all(message.images.map(async (url) => readAsDataUrl(await (await fetch(url)).blob())));
  const parts = message.dataUrls.map((url) => ({ type: 'image_url', image_url: { url } }));
  if (message.content) parts.push({ type: 'text', text: message.content });
  return { role: 'user', content: parts };
}
