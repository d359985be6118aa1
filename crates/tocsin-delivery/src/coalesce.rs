//! Group commit for the worker's two per-delivery writes (marking a send begun, recording an
//! outcome): each delivery asks on its own, and the requests that arrive while a statement is
//! running go together in the next one.
//!
//! Sends finish one by one, at the speed of each provider, so the worker writes per delivery
//! rather than per batch: a slow endpoint never holds its batch-mates' outcomes (nor the
//! capacity they stand for) hostage. Under load the statements carry hundreds of rows each;
//! when idle a lone request goes at once, with no timer to wait for.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// Runs requests in batches through one async function; cheap to clone.
#[derive(Debug)]
pub(crate) struct Coalescer<Req, Resp> {
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
    /// Spawns the task that calls `run` with up to `most` requests at a time; `run` answers
    /// each, in order. The task ends when the last clone is dropped.
    pub(crate) fn spawn<F, Fut>(most: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let (requests, mut waiting) = mpsc::unbounded_channel::<(Req, oneshot::Sender<Resp>)>();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                while batch.len() < most.max(1) {
                    match waiting.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
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
    pub(crate) async fn call(&self, request: Req) -> Option<Resp> {
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
        let doubler = Coalescer::spawn(8, move |batch: Vec<u32>| {
            seen.lock().unwrap().push(batch.len());
            async move {
                // Slow enough that the others queue behind the first call.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                batch.into_iter().map(|n| n * 2).collect()
            }
        });
        let answers = futures::future::join_all((0..20).map(|n| {
            let doubler = doubler.clone();
            async move { doubler.call(n).await }
        }))
        .await;
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
}
