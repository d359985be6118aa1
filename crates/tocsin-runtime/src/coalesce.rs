//! Group commit: each request is made on its own, and the requests that arrive while a
//! statement is running go together in the next one. The delivery workers write their
//! per-delivery marks and outcomes through it, and the SMS worker its provider callbacks.
//!
//! Sends finish one by one, at the speed of each provider, so a worker writes per delivery
//! rather than per batch: a slow endpoint never holds its batch-mates' outcomes (nor the
//! capacity they stand for) hostage. When idle a lone request goes at once, with no timer to
//! wait for. Under load a queue runs at most one statement per `linger`: without that pause a
//! channel finishing sends one by one at a steady pace (16 SMTP connections, say) ran a
//! statement every millisecond with eight rows in it, and PostgreSQL spent most of its CPU
//! on the statements' fixed cost (parse, plan, commit) rather than on the rows.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Runs requests in batches through one async function; cheap to clone.
#[derive(Debug)]
pub struct Coalescer<Req, Resp> {
    requests: mpsc::UnboundedSender<(Req, oneshot::Sender<Resp>)>,
}

impl<Req, Resp> Clone for Coalescer<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Spawns the task that calls `run` with up to `most` requests at a time, and at most
    /// once per `linger` unless `most` are waiting; `run` answers each, in order. The task
    /// ends when the last clone is dropped.
    pub fn spawn<F, Fut>(most: usize, linger: Duration, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (requests, mut waiting) = mpsc::unbounded_channel::<(Req, oneshot::Sender<Resp>)>();
        let most = most.max(1);
        tokio::spawn(async move {
            let mut last_run: Option<tokio::time::Instant> = None;
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                // Busy (the last statement began less than a linger ago): gather until a
                // linger after it. Idle: go at once.
                if let Some(until) = last_run.map(|at| at + linger)
                    && until > tokio::time::Instant::now()
                {
                    while batch.len() < most {
                        match tokio::time::timeout_at(until, waiting.recv()).await {
                            Ok(Some(request)) => batch.push(request),
                            _ => break,
                        }
                    }
                }
                while batch.len() < most {
                    match waiting.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                last_run = Some(tokio::time::Instant::now());
                let (requests, answers): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                    batch.into_iter().unzip();
                for (answer, response) in answers.into_iter().zip(run(requests).await) {
                    // The asker may have given up (a dropped task); its answer goes nowhere.
                    let _ = answer.send(response);
                }
            }
        });
        Self { requests }
    }

    /// Runs `request` with whatever else is waiting; `None` if the task is gone.
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (answer, response) = oneshot::channel();
        self.requests.send((request, answer)).ok()?;
        response.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn requests_arriving_together_share_a_call_and_each_gets_its_answer() {
        let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
        let seen = calls.clone();
        let doubler = Coalescer::spawn(8, Duration::ZERO, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                // Slow enough that the others queue behind the first call.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                batch.into_iter().map(|n| n * 2).collect()
            }
        });
        let asking: Vec<_> = (0..20)
            .map(|n| {
                let doubler = doubler.clone();
                tokio::spawn(async move { doubler.call(n).await })
            })
            .collect();
        let mut answers = Vec::new();
        for asked in asking {
            answers.push(asked.await.unwrap());
        }
        assert_eq!(
            answers,
            (0..20).map(|n| Some(n * 2)).collect::<Vec<_>>(),
            "each its own answer, in order"
        );
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 20);
        assert!(
            calls.iter().all(|&n| n <= 8),
            "at most 8 at a time: {calls:?}"
        );
        assert!(calls.len() < 20, "requests were grouped: {calls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_goes_at_once_and_a_steady_trickle_is_grouped_by_the_linger() {
        let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
        let seen = calls.clone();
        let linger = Duration::from_millis(10);
        let echo = Coalescer::spawn(512, linger, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move { batch }
        });
        let started = tokio::time::Instant::now();
        assert_eq!(echo.call(1).await, Some(1));
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the first request after a quiet spell waits for nothing"
        );
        // One request per millisecond, each sent without waiting for the previous answer,
        // as sends finishing one by one do.
        let trickle: Vec<_> = (0..40)
            .map(|n| {
                let echo = echo.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(n)).await;
                    echo.call(n as u32).await
                })
            })
            .collect();
        for (n, answer) in trickle.into_iter().enumerate() {
            assert_eq!(answer.await.unwrap(), Some(n as u32), "each its own answer");
        }
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.iter().sum::<usize>(), 41);
        // 40 ms of requests at one statement per 10 ms: about five statements, not forty.
        assert!(
            calls.len() <= 7,
            "a statement per linger at most, under load: {calls:?}"
        );
        assert!(
            calls.iter().skip(1).any(|&n| n >= 8),
            "statements under load carry many rows: {calls:?}"
        );
    }
}
