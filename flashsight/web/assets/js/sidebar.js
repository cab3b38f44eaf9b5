// The conversation list: open, rename (in place), delete (asks once more), search by title.

import { conversations } from './api.js';
import { button, el } from './dom.js';

export class Sidebar {
  constructor({ list, search, onOpen, onDeleted, onRenamed, onError }) {
    Object.assign(this, { list, search, onOpen, onDeleted, onRenamed, onError });
    this.currentId = null;
    let timer;
    search.addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => this.refresh(), 200);
    });
  }

  async refresh() {
    try {
      const items = await conversations.list(this.search.value.trim());
      this.list.replaceChildren(...items.map((item) => this.entry(item)));
    } catch (error) {
      this.onError(error);
    }
  }

  clear() {
    this.currentId = null;
    this.search.value = '';
    this.list.replaceChildren();
  }

  select(id) {
    this.currentId = id;
    for (const entry of this.list.children) entry.classList.toggle('current', entry.dataset.id === id);
  }

  entry(item) {
    const entry = el('li');
    entry.dataset.id = item.id;
    entry.classList.toggle('current', item.id === this.currentId);
    const open = button(item.title, 'open', () => this.onOpen(item.id), `Open conversation ${item.title}`);
    if (item.id === this.currentId) open.setAttribute('aria-current', 'true');
    const rename = button('\u270e', 'rename', () => this.startRename(entry, item), `Rename ${item.title}`);
    const remove = button('\u2715', 'delete', () => this.confirmDelete(remove, item), `Delete ${item.title}`);
    remove.addEventListener('blur', () => resetDelete(remove, item));
    entry.append(open, rename, remove);
    return entry;
  }

  startRename(entry, item) {
    const input = el('input');
    input.value = item.title;
    input.setAttribute('aria-label', 'New title');
    input.maxLength = 200;
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = input.value.trim();
      if (save && title && title !== item.title) {
        try {
          await conversations.update(item.id, { title });
          this.onRenamed(item.id, title);
        } catch (error) {
          this.onError(error);
        }
      }
      await this.refresh();
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') finish(true);
      if (event.key === 'Escape') finish(false);
    });
    input.addEventListener('blur', () => finish(true));
    entry.replaceChildren(input);
    input.focus();
    input.select();
  }

  async confirmDelete(remove, item) {
    if (!remove.classList.contains('confirming')) {
      remove.classList.add('confirming');
      remove.textContent = 'Delete?';
      remove.setAttribute('aria-label', `Confirm: delete ${item.title}`);
      return;
    }
    try {
      await conversations.remove(item.id);
      this.onDeleted(item.id);
    } catch (error) {
      this.onError(error);
    }
    await this.refresh();
  }
}

function resetDelete(remove, item) {
  remove.classList.remove('confirming');
  remove.textContent = '\u2715';
  remove.setAttribute('aria-label', `Delete ${item.title}`);
}
