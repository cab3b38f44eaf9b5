// The status bar: the server's /v1/status, and the last answer's speed as this page measured it.

import { serverStatus } from './api.js';

const GIB = 1024 ** 3;

export class StatusBar {
  constructor(element) {
    this.element = element;
    this.server = null;
    this.lastAnswer = null;
  }

  start(intervalMs = 5000) {
    this.poll();
    setInterval(() => this.poll(), intervalMs);
  }

  async poll() {
    try {
      this.server = await serverStatus();
    } catch {
      this.server = null;
    }
    this.render();
  }

  recordAnswer(ttftMs, tokensPerSecond) {
    this.lastAnswer = { ttftMs, tokensPerSecond };
    this.render();
  }

  get model() {
    return this.server?.model || null;
  }

  render() {
    const parts = [];
    const server = this.server;
    if (server) {
      parts.push(server.model, server.device);
      const memory = server.engine?.gpu_memory;
      if (memory) parts.push(`GPU ${(memory.used_bytes / GIB).toFixed(1)} / ${(memory.total_bytes / GIB).toFixed(1)} GiB`);
      parts.push(`${server.engine?.waiting_requests ?? 0} waiting`, `${server.engine?.running_requests ?? 0} running`);
    } else {
      parts.push('Server status unavailable');
    }
    if (this.lastAnswer) {
      const { ttftMs, tokensPerSecond } = this.lastAnswer;
      parts.push(`last answer: first token ${Math.round(ttftMs)} ms`);
      if (tokensPerSecond) parts.push(`${tokensPerSecond.toFixed(1)} tokens/s`);
    }
    this.element.textContent = parts.join(' \u00b7 ');
  }
}
