// The job page: draws the whole model's estimated latency and each task's best time over
// trials with uPlot, and follows the job's event stream while it runs. Task names come from
// the user's model: they are only ever set as text or read from data attributes.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("job-data").textContent);
  const modelBox = document.getElementById("model-chart");

  function width(el, fallback) {
    return Math.max(el.clientWidth - 10, fallback);
  }

  function series(points) {
    // [trial indices, values]; null values (no estimate yet) leave a gap.
    const xs = [], ys = [];
    points.forEach(function (v, i) { xs.push(i + 1); ys.push(v); });
    return [xs, ys];
  }

  function makePlot(el, label, points, small) {
    const opts = {
      width: small ? 180 : width(el, 400),
      height: small ? 48 : 240,
      legend: { show: !small },
      cursor: { show: !small },
      scales: { x: { time: false } },
      axes: small ? [{ show: false }, { show: false }] : [
        { label: "trials" },
        { label: label, size: 70 },
      ],
      series: [{ label: "trial" }, { label: label, stroke: "#2f6fde", width: small ? 1.5 : 2, spanGaps: true }],
    };
    return new uPlot(opts, series(points), el);
  }

  const modelPoints = data.model_curve.slice();
  if (!data.finished && data.estimated_latency_ms !== null) {
    modelPoints.push(data.estimated_latency_ms * 1000);
  }
  const modelPlot = makePlot(modelBox, "µs", modelPoints, false);
  modelBox.dataset.points = String(modelPoints.filter(function (v) { return v !== null; }).length);

  const taskPoints = {};
  const taskPlots = {};
  document.querySelectorAll(".spark[data-task]").forEach(function (el) {
    const name = el.dataset.task;
    taskPoints[name] = (data.tasks[name] || []).slice();
    taskPlots[name] = makePlot(el, "µs", taskPoints[name], true);
    el.dataset.points = String(taskPoints[name].length);
  });

  if (data.finished) return;

  let lastTrials = data.trials_done;
  const lastTaskTrials = {};
  const source = new EventSource("/jobs/" + encodeURIComponent(data.id) + "/events");

  function update(status) {
    document.getElementById("job-state").textContent = status.state;
    document.getElementById("job-state").className = "state " + status.state;
    document.getElementById("job-message").textContent = status.message || "";
    const total = status.trials_total !== null ? status.trials_total : status.trials;
    document.getElementById("job-trials").textContent = status.trials_done + " / " + total;
    document.getElementById("job-estimate").textContent =
      status.estimated_latency_ms !== null ? status.estimated_latency_ms.toPrecision(4) + " ms" : "—";
    if (status.trials_done !== lastTrials && status.estimated_latency_ms !== null) {
      lastTrials = status.trials_done;
      modelPoints.push(status.estimated_latency_ms * 1000);
      modelPlot.setData(series(modelPoints));
      modelBox.dataset.points = String(modelPoints.filter(function (v) { return v !== null; }).length);
    }
    status.tasks.forEach(function (task) {
      const row = document.querySelector('tr[data-task="' + CSS.escape(task.name) + '"]');
      if (row) {
        row.querySelector(".task-trials").textContent = String(task.trials);
        row.querySelector(".task-best").textContent =
          task.best_latency_us !== null ? task.best_latency_us.toPrecision(4) : "—";
      }
      const plot = taskPlots[task.name];
      if (plot && task.trials !== lastTaskTrials[task.name] && task.best_latency_us !== null) {
        lastTaskTrials[task.name] = task.trials;
        taskPoints[task.name].push(task.best_latency_us);
        plot.setData(series(taskPoints[task.name]));
        plot.root.parentElement.dataset.points = String(taskPoints[task.name].length);
      }
    });
  }

  source.addEventListener("progress", function (event) { update(JSON.parse(event.data)); });
  source.addEventListener("end", function (event) {
    update(JSON.parse(event.data));
    source.close();
    // The finished page has the manifest: latency against the untuned build, downloads.
    setTimeout(function () { window.location.reload(); }, 1500);
  });
})();
