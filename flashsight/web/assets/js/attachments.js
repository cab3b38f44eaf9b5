// Images waiting to be sent: picked, dropped or pasted; shown as thumbnails; downscaled in the
// browser when over the limits, with a note saying so.

import { button, el } from './dom.js';

const ACCEPTED = ['image/jpeg', 'image/png', 'image/webp'];

export class Attachments {
  constructor({ list, note, longSide, maxBytes, maxImages }) {
    Object.assign(this, { list, note, longSide, maxBytes, maxImages });
    this.items = [];
    this.notes = [];
  }

  async add(files) {
    const notes = [];
    for (const file of files) {
      if (this.items.length >= this.maxImages) {
        notes.push(`At most ${this.maxImages} images per message.`);
        break;
      }
      if (!ACCEPTED.includes(file.type)) {
        notes.push(`${file.name || 'That file'} is not a JPEG, PNG or WebP image.`);
        continue;
      }
      try {
        const item = await prepare(file, this.longSide, this.maxBytes);
        if (item.note) notes.push(item.note);
        this.items.push(item);
      } catch {
        notes.push(`${file.name || 'That file'} could not be read as an image.`);
      }
    }
    this.showNotes([...this.notes, ...notes]);
    this.render();
  }

  take() {
    const taken = this.items;
    this.items = [];
    this.render();
    this.showNotes([]);
    return taken;
  }

  // Notes stay until the images are sent, so none goes unseen.
  showNotes(notes) {
    this.notes = notes;
    this.note.textContent = notes.join(' ');
    this.note.hidden = !notes.length;
  }

  render() {
    this.list.replaceChildren(...this.items.map((item, index) => {
      const entry = el('li');
      const thumbnail = el('img');
      thumbnail.src = item.dataUrl;
      thumbnail.alt = item.name;
      const remove = button('\u00d7', '', () => {
        this.items.splice(index, 1);
        this.render();
      }, `Remove ${item.name}`);
      entry.append(thumbnail, el('span', 'name', item.name), remove);
      return entry;
    }));
  }
}

// {name, dataUrl, note}: the file as it is when it fits, else redrawn on a canvas.
async function prepare(file, longSide, maxBytes) {
  const bitmap = await createImageBitmap(file);
  const { width, height } = bitmap;
  const scale = Math.min(1, longSide / Math.max(width, height));
  const name = file.name || 'pasted image';
  if (scale === 1 && file.size <= maxBytes) {
    bitmap.close();
    return { name, dataUrl: await readAsDataUrl(file), note: null };
  }
  const canvas = el('canvas');
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const type = file.type === 'image/png' && scale < 1 ? 'image/png' : 'image/jpeg';
  const dataUrl = canvas.toDataURL(type, 0.9);
  const note = `${name} (${width}\u00d7${height}) was downscaled to ${canvas.width}\u00d7${canvas.height} before sending.`;
  return { name, dataUrl, note };
}

export function readAsDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// The files of a drop or paste event, images only.
export function imageFilesOf(dataTransfer) {
  if (!dataTransfer) return [];
  return [...dataTransfer.files].filter((file) => file.type.startsWith('image/'));
}
