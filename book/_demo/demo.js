// The live demo: draw (or upload) a digit, and the book's CNN reads it in the browser.
//
// The picture goes through MnistPreprocess (preprocess.js, the browser's copy of
// mnist_tutorial.predict.preprocess_image), and the 28x28 result through the ONNX export of the
// shipped model (`python -m mnist_tutorial export-onnx`), run by onnxruntime-web on one CPU thread.
// Nothing leaves the page. window.mnistDemo lets the browser tests drive and read it.
(function () {
  "use strict";

  const script = document.currentScript.src;
  const demoBase = script.replace(/[^/]*$/, "");
  const vendorBase = demoBase.replace(/_demo\/$/, "_vendor/");
  const PEN_WIDTH = 18;
  const INPUT_NAME = "image";
  const OUTPUT_NAME = "probabilities";
  // Below this probability the answer is shown as a guess ("not sure: maybe 4"), lighter and
  // not bold: chapter 4 measured how often the model is right at each confidence.
  const SURE = 0.6;
  const INSTRUCTIONS = "Draw a digit in the box, as large as the box, or upload a picture.";

  function element(tag, attributes = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    for (const child of children) node.append(child);
    return node;
  }

  /** The RGBA pixels of an image file, decoded as Pillow would: upright, no colour management. */
  async function decode(blob) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(blob, {
        imageOrientation: "from-image", premultiplyAlpha: "none", colorSpaceConversion: "none",
      });
    } catch (error) {
      throw new MnistPreprocess.InvalidImageError(
        "this file is not a picture the browser can read (unknown format or damaged); save it as PNG or JPEG");
    }
    if (bitmap.width * bitmap.height > MnistPreprocess.MAX_PIXELS) {
      bitmap.close();
      throw new MnistPreprocess.InvalidImageError(
        `the picture is ${bitmap.width}x${bitmap.height} pixels, over the ${MnistPreprocess.MAX_PIXELS / 1e6}-megapixel ` +
        "limit; shrink it first");
    }
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
    return { pixels, width: bitmap.width, height: bitmap.height, bitmap };
  }

  class Demo {
    constructor(root) {
      this.root = root;
      this.session = null;
      this.busy = false;
      this.pending = null;
      this.count = 0;
      this.last = null;
      this.timings = [];
      this.waiters = [];
      this.build();
      this.ready = this.load();
    }

    build() {
      const id = (name) => `${this.root.id || "mnist-demo"}-${name}`;
      this.canvas = element("canvas", { width: 280, height: 280, class: "mnist-demo-pad", role: "img",
                                        "aria-label": "drawing area: draw one digit here with the mouse, " +
                                                      "a pen or a finger (or upload a picture below)" });
      this.context = this.canvas.getContext("2d", { willReadFrequently: true });
      this.clearButton = element("button", { type: "button", class: "mnist-demo-button mnist-demo-clear" },
                                 ["Clear"]);
      // The file input stays in the page (keyboard, screen readers, the tests) but is drawn as
      // the button its label is.
      this.upload = element("input", { type: "file", accept: "image/*", id: id("upload"),
                                       class: "mnist-demo-upload visually-hidden" });
      const uploadLabel = element("label", { for: id("upload"), class: "mnist-demo-button" },
                                  ["Upload a picture…"]);
      this.seen = element("canvas", { width: 28, height: 28, class: "mnist-demo-seen", role: "img",
                                      "aria-label": "the 28x28 picture the model reads" });
      this.verdict = element("div", { class: "mnist-demo-verdict" });
      this.answer = element("div", { class: "mnist-demo-answer" }, ["…"]);
      // Errors take the answer's place, so that nothing of an earlier reading stays on screen.
      this.error = element("p", { class: "mnist-demo-error", role: "alert" });
      this.error.hidden = true;
      this.reading = element("div", { class: "mnist-demo-reading", "aria-live": "polite", id: id("reading") },
                             [this.verdict, this.answer, this.error]);
      this.status = element("p", { class: "mnist-demo-status", role: "status" }, ["Loading the model…"]);
      this.bars = [];
      const chart = element("ul", { class: "mnist-demo-bars", "aria-label": "probability the model gives each digit" });
      for (let digit = 0; digit < 10; digit++) {
        const fill = element("span", { class: "mnist-demo-fill" });
        const value = element("span", { class: "mnist-demo-value" }, ["–"]);
        chart.append(element("li", { class: "mnist-demo-bar", "data-digit": String(digit) }, [
          element("span", { class: "mnist-demo-label" }, [
            element("span", { class: "visually-hidden" }, ["digit "]), String(digit),
            element("span", { class: "visually-hidden" }, [": "])]),
          element("span", { class: "mnist-demo-track", "aria-hidden": "true" }, [fill]), value]));
        this.bars.push({ fill, value });
      }
      this.root.replaceChildren(
        element("div", { class: "mnist-demo-input" }, [
          this.canvas,
          element("div", { class: "mnist-demo-tools" }, [this.clearButton, this.upload, uploadLabel]),
          element("p", { class: "mnist-demo-hint" }, ["…or drop a picture on the box."])]),
        element("div", { class: "mnist-demo-output" }, [
          element("div", { class: "mnist-demo-top" }, [
            element("figure", {}, [this.seen, element("figcaption", {}, ["what the model sees"])]),
            this.reading]),
          chart, this.status]));
      this.clear();
      this.listen();
    }

    listen() {
      let drawing = false;
      let uploaded = false;
      const point = (event) => {
        const box = this.canvas.getBoundingClientRect();
        return [(event.clientX - box.left) * (this.canvas.width / box.width),
                (event.clientY - box.top) * (this.canvas.height / box.height)];
      };
      let previous = null;
      // One short segment per move, so a long drawing costs no more per move than a short one.
      const segment = (to) => {
        this.context.beginPath();
        this.context.moveTo(...previous);
        this.context.lineTo(...to);
        this.context.stroke();
        previous = to;
      };
      this.canvas.addEventListener("pointerdown", (event) => {
        if (uploaded) this.clear();
        uploaded = false;
        drawing = true;
        this.canvas.setPointerCapture(event.pointerId);
        previous = point(event);
        segment(previous);
        event.preventDefault();
      });
      this.canvas.addEventListener("pointermove", (event) => {
        if (!drawing) return;
        segment(point(event));
        this.predictCanvas();
      });
      const finish = () => {
        if (!drawing) return;
        drawing = false;
        this.predictCanvas();
      };
      this.canvas.addEventListener("pointerup", finish);
      this.canvas.addEventListener("pointercancel", finish);
      this.clearButton.addEventListener("click", () => { uploaded = false; this.clear(); });
      const readFile = async (file) => {
        uploaded = true;
        await this.ready;
        await this.request(() => this.predictFile(file));
      };
      this.upload.addEventListener("change", () => {
        if (this.upload.files.length) readFile(this.upload.files[0]);
      });
      this.canvas.addEventListener("dragover", (event) => event.preventDefault());
      this.canvas.addEventListener("drop", (event) => {
        event.preventDefault();
        if (event.dataTransfer.files.length) readFile(event.dataTransfer.files[0]);
      });
    }

    async load() {
      try {
        ort.env.wasm.wasmPaths = vendorBase + "onnxruntime-web/";
        // A static page is not cross-origin isolated, so WebAssembly threads are unavailable anyway.
        ort.env.wasm.numThreads = 1;
        this.session = await ort.InferenceSession.create(demoBase + "mnist_cnn.onnx", {
          executionProviders: ["wasm"], graphOptimizationLevel: "all",
        });
        this.root.dataset.state = "ready";
        this.say(INSTRUCTIONS);
      } catch (error) {
        this.root.dataset.state = "error";
        this.showError(`The model could not be loaded (${error.message || error}); reload the page.`);
        this.say("");
        throw error;
      }
    }

    say(message) {
      this.status.textContent = message;
    }

    /** Start again: an empty pad, no answer, no error, no file chosen. */
    clear() {
      this.clearPad();
      this.clearResult();
      this.upload.value = "";
      if (this.session) this.say(INSTRUCTIONS);
    }

    clearPad() {
      this.context.fillStyle = "#ffffff";
      this.context.fillRect(0, 0, this.canvas.width, this.canvas.height);
      this.context.strokeStyle = "#000000";
      this.context.lineWidth = PEN_WIDTH;
      this.context.lineCap = "round";
      this.context.lineJoin = "round";
    }

    /** Remove the last reading (picture seen, answer, bars) and any error. */
    clearResult() {
      this.seen.getContext("2d").clearRect(0, 0, 28, 28);
      this.verdict.textContent = "";
      this.answer.textContent = "…";
      this.answer.hidden = false;
      this.error.textContent = "";
      this.error.hidden = true;
      this.reading.classList.remove("mnist-demo-unsure", "mnist-demo-failed");
      this.root.dataset.result = "none";
      for (const bar of this.bars) {
        bar.fill.style.width = "0";
        bar.fill.classList.remove("mnist-demo-best");
        bar.value.textContent = "–";
      }
    }

    /** Show why a picture could not be read, where the answer was; no earlier reading stays. */
    showError(message) {
      this.clearResult();
      this.answer.hidden = true;
      this.error.textContent = message.charAt(0).toUpperCase() + message.slice(1);
      this.error.hidden = false;
      this.reading.classList.add("mnist-demo-failed");
      this.root.dataset.result = "error";
    }

    /** Run one prediction at a time; while one runs, keep only the latest request (an older one resolves to null). */
    request(job) {
      return new Promise((resolve) => {
        const entry = { job, resolve };
        if (this.busy) {
          if (this.pending) this.pending.resolve(null);
          this.pending = entry;
        } else {
          this.run(entry);
        }
      });
    }

    run(entry) {
      this.busy = true;
      entry.job()
        .then(entry.resolve, (error) => {
          this.fail(error);
          entry.resolve(null);
        })
        .finally(() => {
          this.busy = false;
          const next = this.pending;
          this.pending = null;
          if (next) {
            this.run(next);
          } else {
            this.waiters.splice(0).forEach((resolve) => resolve(this.last));
          }
        });
    }

    /** The last result, once every requested prediction has finished. */
    idle() {
      return this.busy ? new Promise((resolve) => this.waiters.push(resolve)) : Promise.resolve(this.last);
    }

    predictCanvas() {
      if (!this.session) return Promise.resolve(null);
      return this.request(() => {
        const started = performance.now();
        const { data, width, height } = this.context.getImageData(0, 0, this.canvas.width, this.canvas.height);
        return this.predictPixels(data, width, height, started, "drawing");
      });
    }

    async predictFile(file) {
      const started = performance.now();
      let decoded;
      try {
        decoded = await decode(file);
      } catch (error) {
        // Nothing of the previous drawing or reading stays beside the error.
        this.clearPad();
        throw error;
      }
      const { pixels, width, height, bitmap } = decoded;
      // Show the picture in the drawing area (display only: the model reads the decoded pixels).
      this.clearPad();
      this.clearResult();
      const scale = Math.min(this.canvas.width / width, this.canvas.height / height);
      this.context.drawImage(bitmap, (this.canvas.width - width * scale) / 2, (this.canvas.height - height * scale) / 2,
                             width * scale, height * scale);
      bitmap.close();
      return this.predictPixels(pixels, width, height, started, "upload");
    }

    /** Preprocess RGBA pixels, run the model, show and return the result. */
    async predictPixels(pixels, width, height, started, source) {
      let steps;
      try {
        steps = MnistPreprocess.preprocess(pixels, width, height);
      } catch (error) {
        if (error instanceof MnistPreprocess.InvalidImageError) {
          this.showError(error.message);
          this.say(source === "upload" ? "Try another picture, or draw a digit in the box." : INSTRUCTIONS);
          return null;
        }
        throw error;
      }
      const preprocessed = performance.now();
      const input = new ort.Tensor("uint8", steps.centred, [1, 1, 28, 28]);
      const output = await this.session.run({ [INPUT_NAME]: input });
      const probabilities = Array.from(output[OUTPUT_NAME].data);
      const finished = performance.now();
      const digit = probabilities.indexOf(Math.max(...probabilities));
      this.count += 1;
      this.last = {
        digit, probabilities, source, centred: Array.from(steps.centred),
        ms: finished - started, preprocessMs: preprocessed - started, inferenceMs: finished - preprocessed,
      };
      this.timings.push({ source, ms: this.last.ms, preprocessMs: this.last.preprocessMs, inferenceMs: this.last.inferenceMs });
      this.show(steps.centred, digit, probabilities);
      this.root.dataset.predictions = String(this.count);
      this.root.dataset.digit = String(digit);
      return this.last;
    }

    show(centred, digit, probabilities) {
      const seen = this.seen.getContext("2d");
      const image = seen.createImageData(28, 28);
      // MNIST stores ink as 255; the book draws every digit dark on light paper.
      centred.forEach((ink, i) => {
        image.data.set([255 - ink, 255 - ink, 255 - ink, 255], 4 * i);
      });
      seen.putImageData(image, 0, 0);
      const best = probabilities[digit];
      const sure = best >= SURE;
      this.error.hidden = true;
      this.error.textContent = "";
      this.answer.hidden = false;
      this.answer.textContent = String(digit);
      this.verdict.textContent = sure ? "it reads" : "not sure: maybe";
      this.reading.classList.remove("mnist-demo-failed");
      this.reading.classList.toggle("mnist-demo-unsure", !sure);
      this.root.dataset.result = sure ? "sure" : "unsure";
      probabilities.forEach((p, i) => {
        this.bars[i].fill.style.width = `${(100 * p).toFixed(1)}%`;
        this.bars[i].value.textContent = `${(100 * p).toFixed(1)}%`;
        this.bars[i].fill.classList.toggle("mnist-demo-best", i === digit);
      });
      const percent = (p) => `${(100 * p).toFixed(1)}%`;
      if (sure) {
        this.say(`It reads ${digit}, with probability ${percent(best)}.`);
      } else {
        const second = probabilities.indexOf(Math.max(...probabilities.filter((_, i) => i !== digit)));
        this.say(`Not sure: maybe ${digit} (${percent(best)}), maybe ${second} (${percent(probabilities[second])}).`);
      }
    }

    fail(error) {
      if (error instanceof MnistPreprocess.InvalidImageError) {
        this.showError(error.message);
        this.say("Try another picture, or draw a digit in the box.");
        return;
      }
      this.showError(`Something went wrong: ${error.message || error}`);
      console.error(error);
    }
  }

  const root = document.getElementById("mnist-demo");
  if (root) {
    const demo = new Demo(root);
    window.mnistDemo = {
      ready: demo.ready,
      /** For the browser tests: predict an image file's bytes exactly as an upload is predicted. */
      predictBytes: async (bytes, type) => {
        await demo.ready;
        return demo.request(() => demo.predictFile(new Blob([bytes], { type })));
      },
      /** The last result once no prediction is running or waiting. */
      idle: () => demo.idle(),
      get last() { return demo.last; },
      get count() { return demo.count; },
      get timings() { return demo.timings; },
    };
  }
})();
